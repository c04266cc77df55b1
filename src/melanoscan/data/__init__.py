"""Reading datasets: sources, safe decoding, audit and splits."""
