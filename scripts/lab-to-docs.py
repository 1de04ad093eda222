# Rewrites the "## Lab" section at the end of each pattern page from docs/lab-results/
# (everything after a page's "## Lab" heading is replaced). Run after `eslab lab run all --quick --out docs/lab-results`.
import re, sys
import os
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'docs') + '/'
def table(id):
    md = open(root + f'lab-results/{id}.md').read()
    lines = md.split('\n')
    out = [l for l in lines if l.startswith('|')]
    return '\n'.join(out)
def finding(id):
    md = open(root + f'lab-results/{id}.md').read()
    m = re.search(r'## Findings\n\n(.*?)\n\n', md, re.S)
    return m.group(1) if m else ''
pages = {
  'postgres-event-store.md': [('append', 'experiment 1, append strategies'), ('ordering', 'experiment 3, global-feed ordering'), ('group-commit', 'experiment 4, group commit'), ('wake-ups', 'experiment 10, wake-ups')],
  'optimistic-concurrency.md': [('concurrency', 'experiment 2, concurrency control under contention')],
  'snapshots.md': [('snapshots', 'experiment 5, snapshots and the state cache')],
  'caching.md': [('snapshots', 'experiment 5, snapshots and the state cache')],
  'projections.md': [('projections', 'experiment 6, projection catch-up')],
  'sqlite-event-store.md': [('stores', 'experiment 9, memory vs SQLite vs PostgreSQL')],
  'aggregate.md': [('stores', 'experiment 9, the same Repository workload on every store')],
  'schema-evolution.md': [('codecs', 'experiment 7, event codecs')],
  'outbox-and-kafka.md': [('kafka-relay', 'experiment 8, Kafka relay batching')],
  'dcb.md': [('cross-stream', 'experiment 12, consistency across streams')],
  'crypto-shredding.md': [('personal-data', 'experiment 13, what crypto-shredding costs')],
}
# Experiments that ran later, on another machine of the kind (see the notes in lab-results/index.md).
machines = {'cross-stream': '2 vCPU Intel Xeon, 23.5 GiB, PostgreSQL 15.20', 'personal-data': '2 vCPU AMD EPYC, 23.5 GiB, PostgreSQL 15.20'}
# Experiments whose committed report is not a quick run of the machine above: a line before their table says which run it is.
runs = {'group-commit': 'Full scale (`eslab lab run group-commit`, 5 rounds of 2 s), 2026-12-03 21:28 UTC, release build of commit\n'
                        '6445455, a quiet 2 vCPU AMD EPYC (PostgreSQL 15.20):'}
for page, exps in pages.items():
    missing = [e for e, _ in exps if not os.path.exists(root + f'lab-results/{e}.md')]
    if missing:
        print(f'skipped {page}: no lab-results/{", ".join(missing)}.md yet (run the lab into docs/lab-results)', file=sys.stderr)
        continue
    ids = ' '.join(e for e, _ in exps)
    s = '\n## Lab\n\n'
    s += 'Measured by ' + ' and '.join(f'[{t}](../lab-results/{e}.md)' for e, t in exps)
    s += f'; rerun with `eslab lab run {ids} --quick` (how to read a report: [docs/lab.md](../lab.md)). '
    machine = machines.get(exps[0][0], '2 vCPU AMD EPYC, 24 GiB, PostgreSQL 15')
    s += f'Latest quick run, on the machine recorded in [lab-results/index.md](../lab-results/index.md) ({machine}):\n'
    for e, t in exps:
        if len(exps) > 1:
            s += f'\n{t[0].upper() + t[1:]}:\n'
        if e in runs:
            s += '\n' + runs[e] + '\n'
        s += '\n' + table(e) + '\n'
        f = finding(e)
        if f:
            s += '\n' + f + '\n'
    p = root + 'patterns/' + page
    body = open(p).read()
    if '\n## Lab\n' in body:
        body = body[:body.index('\n## Lab\n')]
    body = body.rstrip('\n') + '\n' + s
    open(p, 'w').write(body)
    print('updated', page)
