"""kiln's CrossGuard rules, one module per area; each module exposes ``POLICIES``."""
