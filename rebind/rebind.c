/*
 * rebind.so: an LD_PRELOAD library that moves one listening port to loopback.
 *
 * wsproxy starts a wrapped program with
 *   LD_PRELOAD=rebind.so REBIND_OLD_PORT=2023 REBIND_NEW_PORT=41234
 * and listens on port 2023 itself. When the program (or any child that inherits the environment)
 * calls bind() for port REBIND_OLD_PORT on a wildcard or loopback address (0.0.0.0, 127.0.0.0/8,
 * ::, ::1, or the IPv4-mapped forms ::ffff:0.0.0.0 and ::ffff:127.x.y.z), the call becomes a bind
 * of the loopback address of the same family on port REBIND_NEW_PORT. Every other bind passes
 * through untouched. The variable names are websockify's, so either proxy can use either library.
 *
 * The environment is read once, at load time; when a variable is unset or malformed every bind
 * passes through, and this is said once on stderr. The bind path allocates nothing, uses no
 * stdio, and returns the real bind()'s result and errno.
 *
 * Build: cc -Wall -Wextra -Werror -O2 -fPIC -shared -o rebind.so rebind.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

/* The shortest AF_INET6 address the kernel accepts: RFC 2133's, without sin6_scope_id. */
#define SIN6_MIN_LEN ((socklen_t)offsetof(struct sockaddr_in6, sin6_scope_id))

static bind_fn real_bind;     /* set once by rebind_init(); NULL only if dlsym failed */
static in_port_t old_port;    /* network byte order; 0 means "pass everything through" */
static in_port_t new_port;    /* network byte order */
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void say(const char *a, const char *b, const char *c)
{
	/* Load-time diagnostics only: write(2) needs no buffer and cannot allocate. */
	const char *parts[] = { "rebind: ", a, b, c, "\n" };
	for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
		if (parts[i] && write(STDERR_FILENO, parts[i], strlen(parts[i])) < 0)
			return;
}

/* "1".."65535" in decimal, nothing else; returns the port in network order or 0. */
static in_port_t parse_port(const char *text)
{
	unsigned long value = 0;
	if (text == NULL || *text == '\0')
		return 0;
	for (const char *p = text; *p; p++) {
		if (*p < '0' || *p > '9')
			return 0;
		value = value * 10 + (unsigned long)(*p - '0');
		if (value > 65535)
			return 0;
	}
	return htons((in_port_t)value);
}

static void rebind_init(void)
{
	int saved_errno = errno;
	const char *old_text = getenv("REBIND_OLD_PORT");
	const char *new_text = getenv("REBIND_NEW_PORT");

	real_bind = (bind_fn)dlsym(RTLD_NEXT, "bind");
	if (real_bind == NULL) {
		const char *why = dlerror();
		say("cannot find the real bind(): ", why ? why : "unknown error", "");
	}
	if (old_text == NULL && new_text == NULL) {
		say("REBIND_OLD_PORT and REBIND_NEW_PORT are unset", "", ", binds pass through");
	} else {
		in_port_t o = parse_port(old_text), n = parse_port(new_text);
		if (o == 0)
			say("REBIND_OLD_PORT is not a port 1-65535: ", old_text ? old_text : "(unset)",
			    ", binds pass through");
		else if (n == 0)
			say("REBIND_NEW_PORT is not a port 1-65535: ", new_text ? new_text : "(unset)",
			    ", binds pass through");
		else {
			old_port = o;
			new_port = n;
		}
	}
	errno = saved_errno;
}

__attribute__((constructor)) static void rebind_load(void)
{
	pthread_once(&init_once, rebind_init);
}

static int local_ipv4(in_addr_t addr) /* network order */
{
	uint32_t host = ntohl(addr);
	return host == INADDR_ANY || (host >> 24) == 127;
}

static int local_ipv6(const struct in6_addr *addr)
{
	if (IN6_IS_ADDR_UNSPECIFIED(addr) || IN6_IS_ADDR_LOOPBACK(addr))
		return 1;
	if (IN6_IS_ADDR_V4MAPPED(addr)) {
		in_addr_t v4;
		memcpy(&v4, &addr->s6_addr[12], sizeof v4);
		return local_ipv4(v4);
	}
	return 0;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
	pthread_once(&init_once, rebind_init); /* in case a constructor binds before ours ran */
	if (real_bind == NULL) {
		errno = ENOSYS;
		return -1;
	}
	/* Too short to hold even the family: not ours to read (the kernel answers EINVAL). */
	if (old_port == 0 || addr == NULL || len < (socklen_t)sizeof(sa_family_t))
		return real_bind(fd, addr, len);

	if (addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
		struct sockaddr_in moved;
		memcpy(&moved, addr, sizeof moved);
		if (moved.sin_port == old_port && local_ipv4(moved.sin_addr.s_addr)) {
			moved.sin_port = new_port;
			moved.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			return real_bind(fd, (const struct sockaddr *)&moved, sizeof moved);
		}
	} else if (addr->sa_family == AF_INET6 && len >= SIN6_MIN_LEN) {
		/* Up to sizeof(struct sockaddr_in6); the kernel also takes the RFC 2133 size. */
		socklen_t used = len < (socklen_t)sizeof(struct sockaddr_in6)
					 ? len : (socklen_t)sizeof(struct sockaddr_in6);
		struct sockaddr_in6 moved;
		memset(&moved, 0, sizeof moved);
		memcpy(&moved, addr, used);
		if (moved.sin6_port == old_port && local_ipv6(&moved.sin6_addr)) {
			moved.sin6_port = new_port;
			if (IN6_IS_ADDR_V4MAPPED(&moved.sin6_addr)) {
				/* Keep the IPv4-mapped form: the socket serves IPv4 clients. */
				in_addr_t loopback = htonl(INADDR_LOOPBACK);
				memcpy(&moved.sin6_addr.s6_addr[12], &loopback, sizeof loopback);
			} else {
				moved.sin6_addr = in6addr_loopback;
			}
			moved.sin6_scope_id = 0;
			return real_bind(fd, (const struct sockaddr *)&moved, used);
		}
	}
	return real_bind(fd, addr, len);
}
