"""Persistence: calls and accounts in SQL, image bytes in a file store."""

from imagegate.store.accounts import AccountStore, Principal
from imagegate.store.calls import CallStore
from imagegate.store.files import FileStore, LocalFileStore

__all__ = ["AccountStore", "CallStore", "FileStore", "LocalFileStore", "Principal"]
