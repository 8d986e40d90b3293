//! memcached binary protocol (stub, being written).
