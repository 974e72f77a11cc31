"""Resource's reading of a stored record, without etcd."""

import json

import pytest

from datastore.resources import Resource


def test_a_stored_record_reads_in_any_encoding_json_takes():
    """UTF-8 is decoded before json.loads (faster); a byte order mark or
    UTF-16, which json.loads of bytes takes, still reads; what is no JSON
    is a ValueError, as before."""
    record = {"kind": "Profile", "apiVersion": "projectcalico.org/v3",
              "metadata": {"name": "net1", "resourceVersion": "7"}, "spec": {}}
    text = json.dumps(record)
    for raw in (text, text.encode(), b"\xef\xbb\xbf" + text.encode(), text.encode("utf-16")):
        assert Resource.from_json(raw, 3) == Resource("Profile", "net1", spec={}, revision=3)
    with pytest.raises(ValueError):
        Resource.from_json(b"\xff{")
