// bench/origin.c: the bench's HTTP/1.1 origin, the same for every proxy under test and cheap enough that it
// never is the bottleneck. One thread, epoll, keep-alive, GET only, fixed bodies:
//   /1k /64k /1m /16m   200, Content-Length, bytes 'a'
//   anything else       404 (empty body)
// Small responses (head + body up to 64 KiB) are one prebuilt buffer written with one send(); large ones are the
// head (MSG_MORE) and then sendfile() from a memfd, so the origin does not copy bodies through userspace.
// A request with a body, or one that does not fit the 16 KiB input buffer, is answered 400 and the connection closed.
//
//   cc -O2 -o origin bench/origin.c && ./origin [PORT]    prints "listening <port>" once ready (PORT 0 = any)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#define IN_CAP 16384
#define BIG (16 * 1024 * 1024)

// head_close: the same head saying `Connection: close`, for a request that asked for it (the client then knows
// to reconnect, not to wait on a connection the origin is about to close); its body is sent from the memfd.
struct route { const char *path; size_t body; char *small; size_t small_len; char head[160]; size_t head_len; char head_close[160]; size_t head_close_len; };
static struct route routes[] = {
	{ "/1k", 1024, 0, 0, "", 0, "", 0 },
	{ "/64k", 64 * 1024, 0, 0, "", 0, "", 0 },
	{ "/1m", 1024 * 1024, 0, 0, "", 0, "", 0 },
	{ "/16m", BIG, 0, 0, "", 0, "", 0 },
};
#define NROUTES (sizeof routes / sizeof routes[0])
static const char not_found[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
static const char bad_request[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

struct conn {
	int fd;
	size_t in_len;
	char in[IN_CAP];
	// the response being sent: a buffer (out, out_len, out_off) then a file range (file_off .. file_end)
	const char *out;
	size_t out_len, out_off;
	off_t file_off, file_end;
	int close_after;
	unsigned events; // what epoll waits for now (saves an epoll_ctl per request)
};

static int memfd = -1;
static int ep = -1;

static void die(const char *what) { perror(what); exit(1); }

static void conn_close(struct conn *c) {
	close(c->fd);
	free(c);
}

static int want(struct conn *c, unsigned events) {
	if (c->events == events) return 0;
	c->events = events;
	struct epoll_event ev = { .events = events, .data.ptr = c };
	return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

// Parses one request from c->in if complete; sets up the response. 1 = a response is pending, 0 = need more
// bytes, -1 = close.
static int parse(struct conn *c) {
	char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
	if (!end) {
		if (c->in_len == IN_CAP) { c->out = bad_request; c->out_len = sizeof bad_request - 1; c->out_off = 0; c->file_off = c->file_end = 0; c->close_after = 1; return 1; }
		return 0;
	}
	size_t head_len = (size_t)(end - c->in) + 4;
	char *sp1 = memchr(c->in, ' ', head_len);
	char *sp2 = sp1 ? memchr(sp1 + 1, ' ', head_len - (size_t)(sp1 + 1 - c->in)) : NULL;
	int has_body = 0;
	c->close_after = 0;
	for (char *line = memchr(c->in, '\n', head_len); line && line + 1 < end; line = memchr(line + 1, '\n', (size_t)(end - line - 1) + 1)) {
		char *h = line + 1;
		if (!strncasecmp(h, "content-length:", 15)) { char *v = h + 15; while (*v == ' ') v++; if (*v != '0') has_body = 1; }
		else if (!strncasecmp(h, "transfer-encoding:", 18)) has_body = 1;
		else if (!strncasecmp(h, "connection:", 11)) { char *v = h + 11; while (*v == ' ') v++; if (!strncasecmp(v, "close", 5)) c->close_after = 1; }
	}
	c->out_off = 0;
	c->file_off = c->file_end = 0;
	if (!sp1 || !sp2 || has_body || strncmp(c->in, "GET ", 4) != 0) {
		c->out = bad_request; c->out_len = sizeof bad_request - 1; c->close_after = 1;
	} else {
		size_t plen = (size_t)(sp2 - sp1 - 1);
		struct route *r = NULL;
		for (size_t i = 0; i < NROUTES; i++) if (strlen(routes[i].path) == plen && !memcmp(routes[i].path, sp1 + 1, plen)) r = &routes[i];
		if (!r) { c->out = not_found; c->out_len = sizeof not_found - 1; }
		else if (c->close_after) { c->out = r->head_close; c->out_len = r->head_close_len; c->file_end = (off_t)r->body; }
		else if (r->small) { c->out = r->small; c->out_len = r->small_len; }
		else { c->out = r->head; c->out_len = r->head_len; c->file_end = (off_t)r->body; }
	}
	memmove(c->in, c->in + head_len, c->in_len - head_len);
	c->in_len -= head_len;
	return 1;
}

// Sends what is pending. 1 = done, 0 = blocked (EPOLLOUT armed), -1 = close.
static int flush(struct conn *c) {
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL | (c->file_end ? MSG_MORE : 0));
		if (n < 0) { if (errno == EAGAIN) return want(c, EPOLLOUT) ? -1 : 0; if (errno == EINTR) continue; return -1; }
		c->out_off += (size_t)n;
	}
	while (c->file_off < c->file_end) {
		ssize_t n = sendfile(c->fd, memfd, &c->file_off, (size_t)(c->file_end - c->file_off));
		if (n < 0) { if (errno == EAGAIN) return want(c, EPOLLOUT) ? -1 : 0; if (errno == EINTR) continue; return -1; }
		if (n == 0) return -1;
	}
	c->out = NULL;
	c->out_len = c->out_off = 0;
	c->file_off = c->file_end = 0;
	return c->close_after ? -1 : 1;
}

// Serves every complete request in the buffer, then reads more. Returns -1 to close.
static int serve(struct conn *c, int readable) {
	for (;;) {
		if (c->out) {
			int r = flush(c);
			if (r <= 0) return r;
			if (want(c, EPOLLIN)) return -1;
		}
		int p = parse(c);
		if (p < 0) return -1;
		if (p == 1) continue;
		if (!readable) return 0;
		ssize_t n = recv(c->fd, c->in + c->in_len, IN_CAP - c->in_len, 0);
		if (n == 0) return -1;
		if (n < 0) return errno == EAGAIN ? 0 : errno == EINTR ? 0 : -1;
		c->in_len += (size_t)n;
	}
}

int main(int argc, char **argv) {
	signal(SIGPIPE, SIG_IGN);
	int port = argc > 1 ? atoi(argv[1]) : 0;
	memfd = memfd_create("origin-body", 0);
	if (memfd < 0) die("memfd_create");
	char *body = malloc(BIG);
	if (!body) die("malloc");
	memset(body, 'a', BIG);
	for (size_t off = 0; off < BIG;) { ssize_t n = write(memfd, body + off, BIG - off); if (n <= 0) die("write memfd"); off += (size_t)n; }
	for (size_t i = 0; i < NROUTES; i++) {
		struct route *r = &routes[i];
		r->head_len = (size_t)snprintf(r->head, sizeof r->head, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %zu\r\n\r\n", r->body);
		r->head_close_len = (size_t)snprintf(r->head_close, sizeof r->head_close, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", r->body);
		if (r->body <= 64 * 1024) {
			r->small_len = r->head_len + r->body;
			r->small = malloc(r->small_len);
			if (!r->small) die("malloc");
			memcpy(r->small, r->head, r->head_len);
			memcpy(r->small + r->head_len, body, r->body);
		}
	}
	free(body);

	int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (ls < 0) die("socket");
	int one = 1;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((unsigned short)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (bind(ls, (struct sockaddr *)&a, sizeof a)) die("bind");
	if (listen(ls, 1024)) die("listen");
	socklen_t alen = sizeof a;
	if (getsockname(ls, (struct sockaddr *)&a, &alen)) die("getsockname");
	ep = epoll_create1(0);
	if (ep < 0) die("epoll_create1");
	struct epoll_event lev = { .events = EPOLLIN, .data.ptr = NULL };
	if (epoll_ctl(ep, EPOLL_CTL_ADD, ls, &lev)) die("epoll_ctl");
	printf("listening %d\n", ntohs(a.sin_port));
	fflush(stdout);

	struct epoll_event evs[64];
	for (;;) {
		int n = epoll_wait(ep, evs, 64, -1);
		if (n < 0) { if (errno == EINTR) continue; die("epoll_wait"); }
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (!c) {
				for (;;) {
					int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
					if (fd < 0) break;
					setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
					struct conn *nc = calloc(1, sizeof *nc);
					if (!nc) { close(fd); continue; }
					nc->fd = fd;
					nc->events = EPOLLIN;
					struct epoll_event ev = { .events = EPOLLIN, .data.ptr = nc };
					if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)) { close(fd); free(nc); }
				}
				continue;
			}
			if ((evs[i].events & (EPOLLERR | EPOLLHUP)) && !(evs[i].events & EPOLLIN)) { conn_close(c); continue; }
			if (serve(c, (evs[i].events & EPOLLIN) != 0) < 0) conn_close(c);
		}
	}
}
