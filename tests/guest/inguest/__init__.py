"""What runs inside the guest: scenarios of named checks (standard library at import time)."""
