print("petrel-raft-sim: not yet")
