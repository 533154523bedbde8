"""The hunt: a search for the inputs a backend gets most wrong, and the moves it makes."""
