"""Operator tools: the `a3redis` CLI, the local cluster launcher, the
interactive setup, progress output and the cluster status view."""
