"""Checkers for the lessons' exercises, one module per lesson (lesson01.py, ...).

A lesson's exercise cell holds a `# YOUR CODE HERE` stub; the cell after it
calls the lesson's checker, which says "not done yet" while the stub returns
None and raises AssertionError on a wrong answer. The worked solutions live
apart, in notebooks/solutions/, and are run by the same checkers in the tests.
"""
