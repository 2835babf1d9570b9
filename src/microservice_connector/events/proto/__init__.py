"""Generated Protobuf messages of every event (`make proto` regenerates them; do not edit)."""
