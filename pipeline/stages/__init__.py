"""One thin module per make target: parse the command line, make one library call. No stage imports another."""
