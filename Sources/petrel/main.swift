print("petrel: not yet")
