# python-binary-memcached's tests import `conftest` from their own directory for the IPv6 port,
# and the sdist leaves that file out. tools/client-suites serves IPv6 on the IPv4 port (11211)
# before the tests start, so the fixture has nothing left to do.
import pytest

IPV6_PORT = 11211


@pytest.fixture
def memcached_ipv6():
    yield
