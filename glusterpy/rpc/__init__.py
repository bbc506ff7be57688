"""The wire protocol between protocol/client and protocol/server: frames and their codec."""
