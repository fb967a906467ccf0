/* DHCPv6 load generator for bench/dhcp6: SOLICIT->REPLY exchanges with random
 * DUID-LLs, `inflight` at once, to ff02::1:2 on IFACE from port 546.
 * mode 4: the full SOLICIT/ADVERTISE/REQUEST/REPLY exchange;
 * mode 2: SOLICIT with rapid commit -> REPLY.
 * An exchange counts when its REPLY carries an IA_NA with an address.
 *
 * usage: loadgen IFACE COUNT INFLIGHT MAX_SECONDS SEED MODE
 * prints one JSON line: {"done":N,"seconds":S,"rate":R,"timeouts":T,"failed":F}
 * Compiled by bench/dhcp6/run.py with gcc at run time.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXSLOTS 1024
#define TIMEOUT 2.0

struct slot {
    int state; /* 0 idle, 1 solicit sent, 2 request sent */
    uint32_t xid;
    uint8_t duid[10];
    double sent;
};

static struct slot slots[MAXSLOTS];
static uint64_t rng;
static uint32_t gen_counter;

static uint64_t next_rand(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return rng;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int put_opt(uint8_t *p, int i, int code, const uint8_t *v, int len) {
    p[i] = code >> 8; p[i + 1] = code & 255; p[i + 2] = len >> 8; p[i + 3] = len & 255;
    if (len) memcpy(p + i + 4, v, len);
    return i + 4 + len;
}

/* find option `code` in p[start..end): returns offset of its value, sets *len */
static int find_opt(const uint8_t *p, int start, int end, int code, int *len) {
    int i = start;
    while (i + 4 <= end) {
        int c = (p[i] << 8) | p[i + 1], l = (p[i + 2] << 8) | p[i + 3];
        if (i + 4 + l > end) return -1;
        if (c == code) { *len = l; return i + 4; }
        i += 4 + l;
    }
    return -1;
}

static uint32_t new_xid(int idx) {
    gen_counter = (gen_counter + 1) & 0x3FFF;
    return ((uint32_t)gen_counter << 10) | (uint32_t)idx;
}

static int build_solicit(uint8_t *p, struct slot *s, int rapid) {
    p[0] = 1; p[1] = s->xid >> 16; p[2] = s->xid >> 8; p[3] = s->xid;
    int i = 4;
    uint8_t ia[12] = {0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0};
    uint8_t el[2] = {0, 0};
    uint8_t oro[4] = {0, 23, 0, 24};
    i = put_opt(p, i, 1, s->duid, 10);
    i = put_opt(p, i, 8, el, 2);
    i = put_opt(p, i, 6, oro, 4);
    i = put_opt(p, i, 3, ia, 12);
    if (rapid) i = put_opt(p, i, 14, NULL, 0);
    return i;
}

static int build_request(uint8_t *p, struct slot *s, const uint8_t *sid, int sidlen,
                         const uint8_t *ia, int ialen) {
    p[0] = 3; p[1] = s->xid >> 16; p[2] = s->xid >> 8; p[3] = s->xid;
    int i = 4;
    uint8_t el[2] = {0, 0};
    uint8_t oro[4] = {0, 23, 0, 24};
    i = put_opt(p, i, 1, s->duid, 10);
    i = put_opt(p, i, 2, sid, sidlen);
    i = put_opt(p, i, 8, el, 2);
    i = put_opt(p, i, 6, oro, 4);
    i = put_opt(p, i, 3, ia, ialen);
    return i;
}

static void new_client(struct slot *s) {
    uint64_t r = next_rand();
    s->duid[0] = 0; s->duid[1] = 3; s->duid[2] = 0; s->duid[3] = 1;
    s->duid[4] = 0x52; s->duid[5] = (r >> 8) & 0xff; s->duid[6] = (r >> 16) & 0xff;
    s->duid[7] = (r >> 24) & 0xff; s->duid[8] = (r >> 32) & 0xff; s->duid[9] = (r >> 40) & 0xff;
}

int main(int argc, char **argv) {
    if (argc != 7) { fprintf(stderr, "usage: loadgen IFACE COUNT INFLIGHT MAX_SECONDS SEED MODE\n"); return 2; }
    const char *iface = argv[1];
    long count = atol(argv[2]);
    int inflight = atoi(argv[3]);
    double max_seconds = atof(argv[4]);
    rng = 0x9E3779B97F4A7C15ULL ^ (uint64_t)atol(argv[5]) * 0x100000001B3ULL;
    int rapid = atoi(argv[6]) == 2;
    if (inflight > MAXSLOTS) inflight = MAXSLOTS;
    unsigned ifindex = if_nametoindex(iface);
    int fd = socket(AF_INET6, SOCK_DGRAM, 0);
    int one = 1, buf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, iface, strlen(iface));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf);
    setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &ifindex, sizeof ifindex);
    struct sockaddr_in6 me = {0};
    me.sin6_family = AF_INET6; me.sin6_port = htons(546);
    if (bind(fd, (struct sockaddr *)&me, sizeof me) < 0) { perror("bind"); return 1; }
    struct sockaddr_in6 to = {0};
    to.sin6_family = AF_INET6; to.sin6_port = htons(547); to.sin6_scope_id = ifindex;
    inet_pton(AF_INET6, "ff02::1:2", &to.sin6_addr);

    long started = 0, done = 0, timeouts = 0, failed = 0;
    uint8_t pkt[1500], in[1500];
    double t0 = now();
    for (int k = 0; k < inflight && started < count; k++, started++) {
        struct slot *s = &slots[k];
        new_client(s); s->xid = new_xid(k); s->state = 1; s->sent = now();
        int n = build_solicit(pkt, s, rapid);
        sendto(fd, pkt, n, 0, (struct sockaddr *)&to, sizeof to);
    }
    struct pollfd pfd = {fd, POLLIN, 0};
    while (done + timeouts + failed < count && now() - t0 < max_seconds) {
        poll(&pfd, 1, 50);
        for (;;) {
            ssize_t n = recv(fd, in, sizeof in, MSG_DONTWAIT);
            if (n < 4) break;
            uint32_t xid = ((uint32_t)in[1] << 16) | ((uint32_t)in[2] << 8) | in[3];
            int idx = xid & 0x3FF;
            if (idx >= inflight) continue;
            struct slot *s = &slots[idx];
            if (s->xid != xid || s->state == 0) continue;
            int ialen, sidlen;
            int ia = find_opt(in, 4, n, 3, &ialen);
            if (in[0] == 2 && s->state == 1) { /* ADVERTISE */
                int sid = find_opt(in, 4, n, 2, &sidlen);
                if (sid < 0 || ia < 0) { failed++; s->state = 0; goto next; }
                s->xid = new_xid(idx); s->state = 2; s->sent = now();
                int m = build_request(pkt, s, in + sid, sidlen, in + ia, ialen);
                sendto(fd, pkt, m, 0, (struct sockaddr *)&to, sizeof to);
                continue;
            }
            if (in[0] != 7) continue;
            {
                int al;
                if (ia >= 0 && ialen > 12 && find_opt(in, ia + 12, ia + ialen, 5, &al) >= 0) done++;
                else failed++;
                s->state = 0;
            }
        next:
            if (started < count) {
                new_client(s); s->xid = new_xid(idx); s->state = 1; s->sent = now(); started++;
                int m = build_solicit(pkt, s, rapid);
                sendto(fd, pkt, m, 0, (struct sockaddr *)&to, sizeof to);
            }
        }
        double t = now();
        for (int k = 0; k < inflight; k++) {
            struct slot *s = &slots[k];
            if (s->state && t - s->sent > TIMEOUT) {
                timeouts++; s->state = 0;
                if (started < count) {
                    new_client(s); s->xid = new_xid(k); s->state = 1; s->sent = t; started++;
                    int m = build_solicit(pkt, s, rapid);
                    sendto(fd, pkt, m, 0, (struct sockaddr *)&to, sizeof to);
                }
            }
        }
    }
    double secs = now() - t0;
    printf("{\"done\":%ld,\"seconds\":%.3f,\"rate\":%.1f,\"timeouts\":%ld,\"failed\":%ld}\n",
           done, secs, done / secs, timeouts, failed);
    return 0;
}
