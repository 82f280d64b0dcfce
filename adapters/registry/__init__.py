"""Adapter versions, promotion (canary, then full), rollback and hot-loading into engines."""
