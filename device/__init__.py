"""The daemon itself: composition root, keys, owner approval, audit log, status light and
button, the local control socket, and the command-line tools."""
