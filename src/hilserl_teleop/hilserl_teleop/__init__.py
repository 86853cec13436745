"""Intervention mux, input devices, demo recorder and labelling."""
