"""Scoring: the NE metric and intervals, leaderboard, compare, submission writer and validator, plots."""
