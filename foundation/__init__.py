"""The ground floor: what every part of the project may import and nothing below it.

`errors` (the exception tree), `times` (RFC 3339 and `Window`), `clock` (wall and
monotonic clocks, real and fake), `durable` (power-cut-safe SQLite) and `wire` (the wire
contract of docs/protocol.md: limits, topics, the frame-stamp codec). Nothing here imports
`recorder`, `sync`, `device` or `cloud`."""
