"""`vmreclaim demo`: a lab guest frees memory and fills its page cache, and the host sees what
comes back."""
