"""Benchmarks for metarep: reference implementations ("contenders") of one
meta-gradient step of FO-ANIL / exact ANIL on multi-task linear regression,
written the way users of each framework would write them, plus a machine
read-bandwidth probe to compare step times against."""
