-- Tradable instruments. Platform-wide reference data (not tenant-scoped):
-- every tenant trades the same instrument universe.
CREATE TABLE instruments (
    symbol        text PRIMARY KEY CHECK (symbol ~ '^[A-Z0-9]{1,12}(-[A-Z0-9]{1,12})?$'),
    base_asset    text NOT NULL,
    quote_asset   text NOT NULL,
    asset_class   text NOT NULL CHECK (asset_class IN ('CRYPTO', 'EQUITY', 'FX')),
    tick_size     numeric(30, 12) NOT NULL CHECK (tick_size > 0),
    lot_size      numeric(30, 12) NOT NULL CHECK (lot_size > 0),
    min_quantity  numeric(30, 12) NOT NULL CHECK (min_quantity > 0),
    status        text NOT NULL DEFAULT 'TRADING' CHECK (status IN ('TRADING', 'HALTED', 'DELISTED')),
    description   text NOT NULL DEFAULT '',
    listed_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX instruments_quote_asset ON instruments (quote_asset, symbol);

-- The seeded universe the synthetic feed quotes.
INSERT INTO instruments (symbol, base_asset, quote_asset, asset_class, tick_size, lot_size, min_quantity, description) VALUES
    ('BTC-USD', 'BTC', 'USD', 'CRYPTO', 0.01,   0.00001, 0.00001, 'Bitcoin / US dollar'),
    ('ETH-USD', 'ETH', 'USD', 'CRYPTO', 0.01,   0.0001,  0.0001,  'Ether / US dollar'),
    ('SOL-USD', 'SOL', 'USD', 'CRYPTO', 0.001,  0.001,   0.001,   'Solana / US dollar'),
    ('EUR-USD', 'EUR', 'USD', 'FX',     0.00001, 1,      1000,    'Euro / US dollar'),
    ('AAPL',    'AAPL', 'USD', 'EQUITY', 0.01,  1,       1,       'Apple Inc. common stock'),
    ('MSFT',    'MSFT', 'USD', 'EQUITY', 0.01,  1,       1,       'Microsoft Corp. common stock'),
    ('NVDA',    'NVDA', 'USD', 'EQUITY', 0.01,  1,       1,       'NVIDIA Corp. common stock'),
    ('SPY',     'SPY',  'USD', 'EQUITY', 0.01,  1,       1,       'SPDR S&P 500 ETF');
