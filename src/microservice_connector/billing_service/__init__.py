"""The billing service: consumes cart events, keeps running bills, issues invoices."""
