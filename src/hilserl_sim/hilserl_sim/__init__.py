"""MuJoCo bridge node (same topics as the real arm), task scenes, scripted expert and gymnasium bridge."""
