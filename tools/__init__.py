"""Project CLI (tradingctl): infra, run, test, check, gen, release, bench."""
