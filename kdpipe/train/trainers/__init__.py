"""Trainers, one per loss: each builds a TRL trainer for `kdpipe train`."""
