// filled in by the contact issue
