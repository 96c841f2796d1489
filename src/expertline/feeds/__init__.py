"""Record feed webhooks (SPEC §5.2): RCD and TCD records pushed, signed, to configured targets."""
