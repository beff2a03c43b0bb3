"""What fyntr asks of and sets in the kernel: socket options, TCP_INFO readings, giving
memory back, and stand-ins where a platform lacks a call."""
