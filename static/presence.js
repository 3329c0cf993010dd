// filled in by the presence issue
