"""The node's privacy ledger: its append-only file, charging a round before its answer
leaves, replaying an answer already paid for, and the budget report for the steward."""
