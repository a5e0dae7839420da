"""Data sets the product generates or reads in a special way: the seeded synthetic sentiment set
(`seed_sentiment`), the public seed_cwc set with its duplicates removed (`seed_cwc`), and the
content-hash split both use (`hash_split`). numpy and the standard library only at import."""
