"""What a run leaves for people: the console summary, CSV files, the HTML report with its plots, comparisons."""
