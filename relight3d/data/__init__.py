"""Dataparsers and the datamanager."""
