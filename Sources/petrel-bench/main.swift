print("petrel-bench: not yet")
