"""The human review page (`jewelcut review`) and the commands that close the loop:
`calibrate` and `regate`."""
