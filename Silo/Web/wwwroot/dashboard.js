// The dashboard: asks the silo for /api/overview every second and redraws; read-only.
'use strict';

const refreshMs = 1000;

function bytes(n) {
  if (n === null || n === undefined) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + ' ' + units[i];
}

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined) continue;
    if (name === 'class') node.className = value; else node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function bar(fraction, kind) {
  const width = Math.max(0, Math.min(1, fraction)) * 100;
  return el('span', { class: 'bar ' + (kind || ''), title: width.toFixed(0) + ' %' }, el('span', { style: 'width:' + width.toFixed(1) + '%' }));
}

function since(iso) {
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 90) return seconds.toFixed(0) + ' s ago';
  if (seconds < 5400) return (seconds / 60).toFixed(0) + ' min ago';
  return (seconds / 3600).toFixed(1) + ' h ago';
}

function rate(iops, bytesPerSecond) {
  return iops.toFixed(0) + ' IOPS, ' + bytes(bytesPerSecond) + '/s';
}

function drawHosts(hosts) {
  const body = document.querySelector('#hosts tbody');
  body.replaceChildren(...hosts.map(h => el('tr', { 'data-host': h.id, 'data-state': h.state },
    el('td', {}, h.id),
    el('td', {}, el('span', { class: 'state ' + h.state }, h.state)),
    el('td', {}, since(h.stateSince)),
    el('td', {}, h.used === null ? el('span', { class: 'quiet' }, h.state === 'Up' ? 'not answering' : '-') : el('span', {}, bar(h.capacity > 0 ? h.used / h.capacity : 0, 'used'), ' ' + bytes(h.used))),
    el('td', { class: 'number' }, bytes(h.capacity)),
    el('td', { class: 'number' }, h.mismatches),
    el('td', {}, h.endpoint))));
}

function drawVolumes(volumes) {
  const body = document.querySelector('#volumes tbody');
  if (volumes.length === 0) {
    body.replaceChildren(el('tr', {}, el('td', { colspan: 8, class: 'quiet' }, 'no volumes')));
    return;
  }
  body.replaceChildren(...volumes.map(v => {
    const counts = Object.entries(v.groups).filter(([, n]) => n > 0).map(([health, n]) => n + ' ' + health).join(', ');
    const grid = el('div', { class: 'grid' }, ...v.placementGroups.map(g => el('span', {
      class: 'cell ' + g.health, 'data-group': g.index, 'data-health': g.health,
      title: 'group ' + g.index + ': ' + g.health + ' (' + (g.replicas.join(', ') || 'no replica') + (g.pending.length ? '; filling ' + g.pending.join(', ') : '') + ')',
    })));
    return el('tr', { 'data-volume': v.name, 'data-health': v.health },
      el('td', {}, v.name, v.kind ? el('span', { class: 'quiet' }, ' (' + v.kind + ')') : ''),
      el('td', { class: 'number' }, bytes(v.size)),
      el('td', { class: 'number' }, v.factor),
      el('td', {}, el('span', { class: 'health ' + v.health }, v.health), el('br'), el('span', { class: 'quiet' }, counts)),
      el('td', {}, rate(v.rate.readIops, v.rate.readBytesPerSecond)),
      el('td', {}, rate(v.rate.writeIops, v.rate.writeBytesPerSecond)),
      el('td', {}, v.snapshots.length ? v.snapshots.join(', ') : el('span', { class: 'quiet' }, 'none')),
      el('td', {}, grid));
  }));
}

function drawCopies(copies) {
  const box = document.getElementById('copies');
  if (copies.length === 0) {
    box.replaceChildren(el('p', { class: 'quiet' }, 'no copies running'));
    return;
  }
  box.replaceChildren(el('table', {},
    el('thead', {}, el('tr', {}, el('th', {}, 'volume'), el('th', {}, 'group'), el('th', {}, 'from'), el('th', {}, 'to'), el('th', {}, 'progress'), el('th', {}, 'copied'))),
    el('tbody', {}, ...copies.map(c => el('tr', { 'data-copy': c.volume + '/' + c.group + '/' + c.target },
      el('td', {}, c.volume), el('td', { class: 'number' }, c.group), el('td', {}, c.source),
      el('td', {}, c.target + (c.resync ? ' (resync)' : '')),
      // A copy learns how many segments it has once it holds one of its host's copy slots.
      el('td', {}, bar(c.total > 0 ? c.done / c.total : 0), c.total > 0 ? ' ' + c.done + ' / ' + c.total + ' segments' : ' queued'),
      el('td', { class: 'number' }, bytes(c.bytes)))))));
}

function drawChanges(changes) {
  document.getElementById('changes').replaceChildren(...changes.map(c => el('li', { 'data-epoch': c.epoch },
    el('span', { class: 'epoch' }, c.epoch), el('time', { datetime: c.at }, new Date(c.at).toLocaleTimeString()), c.reason)));
}

function showProblem(text) {
  const box = document.getElementById('problem');
  box.hidden = !text;
  box.textContent = text || '';
}

async function refresh() {
  try {
    const response = await fetch('/api/overview', { cache: 'no-store' });
    const overview = await response.json();
    if (!response.ok) {
      showProblem(overview.error || ('the silo answered ' + response.status));
      return;
    }
    showProblem(overview.databaseProblem ? 'DATABASE UNREACHABLE: ' + overview.databaseProblem : '');
    document.getElementById('epoch').textContent = overview.epoch;
    document.getElementById('management').textContent = overview.management;
    document.getElementById('served-by').textContent = overview.servedBy;
    document.getElementById('updated').textContent = new Date(overview.at).toLocaleTimeString();
    drawHosts(overview.hosts);
    drawVolumes(overview.volumes);
    drawCopies(overview.copies);
    drawChanges(overview.changes);
    document.body.dataset.epoch = overview.epoch;
  } catch (error) {
    showProblem('this silo does not answer: ' + error.message);
  } finally {
    setTimeout(refresh, refreshMs);
  }
}

refresh();
