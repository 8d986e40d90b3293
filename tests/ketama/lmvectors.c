/* Prints, for each key on stdin (one per line), the server libmemcached's
 * memcached_server_by_key() chooses, as "host:port".
 *
 * usage: lmvectors MODE host:port[:weight],...
 *   MODE: ketama (KETAMA_WEIGHTED), libmemcached (KETAMA), libmemcached-md5 (KETAMA + HASH=MD5),
 *         libmemcached-spy (KETAMA_WEIGHTED, then DISTRIBUTION=CONSISTENT_KETAMA_SPY)
 * Behaviours are set before the servers are added. Compiled at test time against libmemcached-dev.
 */
#include <libmemcached/memcached.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what, memcached_st *m, memcached_return_t rc) {
  fprintf(stderr, "lmvectors: %s: %s\n", what, m ? memcached_strerror(m, rc) : "");
  exit(2);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: lmvectors MODE host:port[:weight],...\n");
    return 2;
  }
  const char *mode = argv[1];
  memcached_st *m = memcached_create(NULL);
  memcached_return_t rc = MEMCACHED_SUCCESS;
  if (!strcmp(mode, "ketama")) {
    rc = memcached_behavior_set(m, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1);
  } else if (!strcmp(mode, "libmemcached")) {
    rc = memcached_behavior_set(m, MEMCACHED_BEHAVIOR_KETAMA, 1);
  } else if (!strcmp(mode, "libmemcached-md5")) {
    rc = memcached_behavior_set(m, MEMCACHED_BEHAVIOR_KETAMA, 1);
    if (rc == MEMCACHED_SUCCESS)
      rc = memcached_behavior_set(m, MEMCACHED_BEHAVIOR_HASH, MEMCACHED_HASH_MD5);
  } else if (!strcmp(mode, "libmemcached-spy")) {
    rc = memcached_behavior_set(m, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1);
    if (rc == MEMCACHED_SUCCESS)
      rc = memcached_behavior_set(m, MEMCACHED_BEHAVIOR_DISTRIBUTION,
                                  MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA_SPY);
  } else {
    fprintf(stderr, "lmvectors: unknown mode %s\n", mode);
    return 2;
  }
  if (rc != MEMCACHED_SUCCESS) die("behavior", m, rc);

  char *list = strdup(argv[2]);
  for (char *save = NULL, *spec = strtok_r(list, ",", &save); spec;
       spec = strtok_r(NULL, ",", &save)) {
    char *host = spec;
    char *port_s = strchr(host, ':');
    unsigned port = 11211, weight = 1;
    if (port_s) {
      *port_s++ = 0;
      char *weight_s = strchr(port_s, ':');
      if (weight_s) {
        *weight_s++ = 0;
        weight = (unsigned) strtoul(weight_s, NULL, 10);
      }
      port = (unsigned) strtoul(port_s, NULL, 10);
    }
    rc = memcached_server_add_with_weight(m, host, (in_port_t) port, weight);
    if (rc != MEMCACHED_SUCCESS) die("server_add", m, rc);
  }

  char line[4096];
  while (fgets(line, sizeof line, stdin)) {
    size_t len = strlen(line);
    if (len && line[len - 1] == '\n') line[--len] = 0;
    memcached_return_t err;
    const memcached_instance_st *s = memcached_server_by_key(m, line, len, &err);
    if (!s) die("server_by_key", m, err);
    printf("%s:%u\n", memcached_server_name(s), (unsigned) memcached_server_port(s));
  }
  memcached_free(m);
  return 0;
}
