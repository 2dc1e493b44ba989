"""The `lmdock` command line, in the spirit of LM Studio's `lms`."""
