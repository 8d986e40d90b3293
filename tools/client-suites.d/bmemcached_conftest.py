# python-binary-memcached's tests import `conftest` from their own directory for the IPv6 port
# and take a `memcached_sasl` fixture, and the sdist leaves that file out. tools/client-suites
# serves IPv6 on the IPv4 port (11211) and a SASL server (user "user", password "password") on
# 11212 before the tests start, so the fixtures only say where.
import pytest

IPV6_PORT = 11211


@pytest.fixture
def memcached_ipv6():
    yield


SASL_PORT = 11212


@pytest.fixture
def memcached_sasl():
    yield (SASL_PORT, "user", "password")
