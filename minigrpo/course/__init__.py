"""The course's helpers, apart from the engine: what the lessons import besides the algorithm.

    check.py      check(label, got, expected): a lesson cell's self-check, one line of output
    exercises/    the checkers of each lesson's exercises (lesson01.py ... lesson08.py)
    viz/          the lessons' figures and widgets (the clip and KL explorers), computed then drawn
    compare.py    lesson 8's experiment: GRPO, PPO, REINFORCE and RLOO from one SFT start, measured

The engine (minigrpo/) never imports from here, except the command line's `compare` command.
"""
