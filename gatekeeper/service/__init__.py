"""The service: the daemon that runs lanes and sync, its control socket, systemd notify."""
