"""The three delivery channels; each raises contact.errors.DeliveryFailed when the message did not go out."""
