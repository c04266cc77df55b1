"""Prediction for people: predictor, Grad-CAM, export."""
