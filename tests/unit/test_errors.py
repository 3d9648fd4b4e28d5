"""Errors cross process boundaries intact (pydra's cf and slurm workers pickle them)."""

import pickle

import pytest

from strokeperf.errors import DataError, InputError, MissingInputError, NoMatchError


@pytest.mark.parametrize("error", [InputError("sub-01_ctp.nii.gz", "is 3D"),
                                   MissingInputError("x.json", "not found"),
                                   DataError("bolus not captured"), NoMatchError("no sub-9")])
def test_errors_survive_pickling_with_their_message_and_type(error):
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error) and str(back) == str(error)
    assert back.exit_code == error.exit_code
