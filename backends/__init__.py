"""The answerers: one adapter per framework behind the small protocol in softmax_suite.protocol."""
