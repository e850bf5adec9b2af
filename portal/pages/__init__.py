"""The customer portal: server-rendered pages (API.md §11).

Each page is a `RamPage` (door.py): it declares its RAM actions and resource exactly as its API
twin does and is decided by the same `RamPermission`; it reads through the same selectors and
query engine. Pages hold no business logic: forms parse, services act, selectors read."""
