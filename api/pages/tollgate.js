// Tollgate's hosted pages: connect (Sign-In with Ethereum), top-up (an EIP-3009 authorization
// signed with eth_signTypedData_v4) and wallet (balance, history, disconnect). Plain script, no
// build step, no libraries: the browser wallet is reached through EIP-1193 (window.ethereum),
// and every check that matters is done again by the server.
'use strict';

(function () {
  const token = new URLSearchParams(location.search).get('t') || '';
  const $ = (id) => document.getElementById(id);

  // setStatus shows a sentence; state is a hook for styles and tests
  // (loading, ready, working, done, error).
  function setStatus(state, text) {
    const el = $('status');
    el.dataset.state = state;
    el.textContent = text;
  }

  // api calls the pages' API with the link token; it throws the server's message on errors.
  async function api(method, path, body) {
    const res = await fetch(path, {
      method,
      headers: { 'X-Tollgate-Link': token, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
    let data;
    try {
      data = await res.json();
    } catch (e) {
      throw new Error('Unexpected answer from the server (HTTP ' + res.status + '). Please retry.');
    }
    if (!res.ok) {
      throw new Error((data && data.error && data.error.message) || 'HTTP ' + res.status);
    }
    return data;
  }

  // setStatusLink shows an error sentence that ends in a link (to the connect page, say).
  function setStatusLink(text, href, label) {
    setStatus('error', text);
    const a = document.createElement('a');
    a.href = href;
    a.textContent = label;
    $('status').appendChild(a);
  }

  function ethereum() {
    if (!window.ethereum || typeof window.ethereum.request !== 'function') {
      throw new Error('No browser wallet found. Install one (for example MetaMask or Rabby), then reload this page.');
    }
    return window.ethereum;
  }

  // walletError turns an EIP-1193 error into a sentence.
  function walletError(e) {
    if (e && e.code === 4001) return 'You declined the request in your wallet. Nothing happened; you can try again.';
    return (e && e.message) || String(e);
  }

  function utf8Hex(s) {
    return '0x' + Array.from(new TextEncoder().encode(s), (b) => b.toString(16).padStart(2, '0')).join('');
  }

  // switchChain asks the wallet to use chain id (a decimal string or number); it reports
  // whether the wallet is on it afterwards.
  async function switchChain(eth, id) {
    const want = Number(id);
    if (Number(await eth.request({ method: 'eth_chainId' })) === want) return true;
    try {
      await eth.request({ method: 'wallet_switchEthereumChain', params: [{ chainId: '0x' + want.toString(16) }] });
    } catch (e) {
      return false;
    }
    return Number(await eth.request({ method: 'eth_chainId' })) === want;
  }

  function fill(info) {
    $('paywall').textContent = info.paywall;
    $('user').textContent = info.user;
    for (const el of document.querySelectorAll('.paywall-name')) el.textContent = info.paywall;
    $('intro').hidden = false;
  }

  function showBalance(b) {
    $('available').textContent = b.available;
    if ($('held')) $('held').textContent = b.held;
    $('pending').textContent = b.pending;
    $('pending-line').hidden = b.pending_micro === 0;
    $('balance').hidden = false;
  }

  // ---- connect ----

  async function connectPage() {
    const info = await api('GET', 'pages/v1/connect');
    fill(info);
    const button = $('connect');
    if (info.authorized) {
      setStatus('done', 'Connected: ' + info.wallet + '. You can go back to the app.');
      if (info.link_used) return;
      button.textContent = 'Connect another wallet';
    } else if (info.link_used) {
      setStatus('error', 'This link was already used. Ask the app for a new one.');
      return;
    } else {
      setStatus('ready', 'Press the button and confirm in your wallet.');
    }
    button.hidden = false;
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        const eth = ethereum();
        setStatus('working', 'Waiting for your wallet…');
        const accounts = await eth.request({ method: 'eth_requestAccounts' });
        if (!accounts || accounts.length === 0) throw new Error('Your wallet shared no account.');
        const address = accounts[0];
        let chain = Number(await eth.request({ method: 'eth_chainId' }));
        const accepted = info.chain_ids.map(Number);
        if (!accepted.includes(chain)) {
          chain = accepted[0];
          await switchChain(eth, chain); // signing works on any network; switching is a courtesy
        }
        const challenge = await api('POST', 'pages/v1/connect/challenge', { address, chain_id: String(chain) });
        setStatus('working', 'Sign the message in your wallet…');
        const signature = await eth.request({ method: 'personal_sign', params: [utf8Hex(challenge.message), address] });
        setStatus('working', 'Checking the signature…');
        const res = await api('POST', 'pages/v1/connect/verify', { message: challenge.message, signature });
        setStatus('done', 'Connected: ' + res.wallet + '. You can go back to the app.');
        button.hidden = true;
      } catch (e) {
        setStatus('error', walletError(e));
        button.disabled = false;
      }
    });
  }

  // ---- top-up ----

  const topUpText = {
    awaiting_signature: 'Waiting for your signature.',
    signed: 'Pending: signed; it will be sent on chain in a moment.',
    submitted: 'Pending: on its way on chain.',
    credited: 'Credited: the USDC is in your balance. You can go back to the app.',
    failed: 'Failed: ',
  };

  function showTopUp(t) {
    const el = $('topup');
    el.hidden = false;
    el.dataset.status = t.status;
    let text = t.amount + ' USDC — ' + (topUpText[t.status] || t.status);
    if (t.status === 'failed') text += t.reason || 'no money moved.';
    if (t.tx_hash) text += ' Transaction ' + t.tx_hash + '.';
    el.textContent = text;
  }

  async function follow(id) {
    const deadline = Date.now() + 15 * 60 * 1000;
    for (;;) {
      await new Promise((r) => setTimeout(r, 3000));
      let t;
      try {
        t = await api('GET', 'pages/v1/topups/' + encodeURIComponent(id));
      } catch (e) {
        continue; // a blip; the next poll tells
      }
      showTopUp(t);
      if (t.status === 'credited' || t.status === 'failed' || Date.now() > deadline) {
        if (t.status === 'credited') {
          setStatus('done', 'Done: your balance is updated.');
          const info = await api('GET', 'pages/v1/topup');
          if (info.balance) showBalance(info.balance);
        } else if (t.status === 'failed') {
          setStatus('error', 'The top-up failed; no money moved. You can try again.');
        }
        return;
      }
    }
  }

  async function topUpPage() {
    const info = await api('GET', 'pages/v1/topup');
    fill(info);
    if (!info.enabled) {
      setStatus('error', 'Top-ups are not available on this service yet.');
      return;
    }
    if (!info.authorized) {
      setStatusLink('Connect a wallet first: ', info.connect_url, 'connect');
      return;
    }
    showBalance(info.balance);
    $('wallet').textContent = info.balance.wallet;
    $('min').textContent = info.min;
    $('max').textContent = info.max;
    for (const c of info.chains) {
      const o = document.createElement('option');
      o.value = c.id;
      o.textContent = c.name + ' (' + c.id + ')';
      $('chain').appendChild(o);
    }
    $('form').hidden = false;
    setStatus('ready', 'Choose an amount.');
    $('form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const amount = $('amount').value.trim();
      if (!/^\d+(\.\d{1,6})?$/.test(amount)) {
        setStatus('error', 'Write the amount as a number with at most 6 decimals, such as 5 or 2.50.');
        return;
      }
      $('pay').disabled = true;
      try {
        const eth = ethereum();
        setStatus('working', 'Waiting for your wallet…');
        const accounts = (await eth.request({ method: 'eth_requestAccounts' })).map((a) => a.toLowerCase());
        if (!accounts.includes(info.balance.wallet)) {
          throw new Error('Switch your wallet to the connected account ' + info.balance.wallet + ', then try again.');
        }
        const intent = await api('POST', 'pages/v1/topups', { amount, chain_id: $('chain').value });
        if (!(await switchChain(eth, intent.chain_id))) {
          throw new Error('Switch your wallet to network ' + intent.chain_id + ', then try again.');
        }
        setStatus('working', 'Sign the top-up in your wallet…');
        const signature = await eth.request({
          method: 'eth_signTypedData_v4',
          params: [intent.wallet, JSON.stringify(intent.typed_data)],
        });
        const t = await api('POST', 'pages/v1/topups/' + encodeURIComponent(intent.id) + '/signature', { signature });
        setStatus('done', 'Signed. You can leave this page open to watch it arrive.');
        showTopUp(t);
        follow(intent.id);
      } catch (e) {
        setStatus('error', walletError(e));
      } finally {
        $('pay').disabled = false;
      }
    });
  }

  // ---- wallet ----

  // describe names a history item as the person would: a top-up, the model a request used, the
  // app's own words for its charges, a refund and why.
  function describe(it) {
    const m = it.metadata || {};
    switch (it.kind) {
      case 'deposit': return 'Top-up';
      case 'capture': return m.model ? 'Request to ' + m.model : 'Request';
      case 'charge': return m.description || 'Charge';
      case 'reversal': return m.reason ? 'Refund: ' + m.reason : 'Refund';
      default: return it.kind;
    }
  }

  function addRows(items) {
    for (const it of items) {
      const tr = document.createElement('tr');
      const when = document.createElement('td');
      when.textContent = new Date(it.created_at).toLocaleString();
      const what = document.createElement('td');
      what.textContent = describe(it);
      const amount = document.createElement('td');
      amount.className = 'num';
      amount.textContent = (it.amount_micro > 0 ? '+' : '') + it.amount;
      tr.append(when, what, amount);
      $('items').appendChild(tr);
    }
  }

  async function walletPage() {
    const info = await api('GET', 'pages/v1/wallet');
    fill(info);
    if (!info.authorized) {
      setStatusLink('No wallet is connected for this app. ', info.connect_url, 'Connect one');
      return;
    }
    $('wallet').textContent = info.balance.wallet;
    showBalance(info.balance);
    $('topup-link').href = info.topup_url;
    $('topup-link').hidden = false;
    let next = '';
    async function page() {
      const h = await api('GET', 'pages/v1/wallet/history' + (next ? '?cursor=' + encodeURIComponent(next) : ''));
      addRows(h.items);
      next = h.next;
      $('more').hidden = !next;
    }
    await page();
    $('history').hidden = false;
    $('disconnect').hidden = false;
    $('more').addEventListener('click', () => page().catch((e) => setStatus('error', e.message)));
    $('disconnect-button').addEventListener('click', async () => {
      if (!window.confirm(info.paywall + ' will no longer be able to charge this wallet. Disconnect?')) return;
      try {
        await api('POST', 'pages/v1/wallet/disconnect', {});
        setStatus('done', 'Disconnected. ' + info.paywall + ' can no longer charge this wallet.');
        $('disconnect').hidden = true;
        $('topup-link').hidden = true;
      } catch (e) {
        setStatus('error', e.message);
      }
    });
    setStatus('ready', '');
    if (location.hash === '#history' || location.hash === '#disconnect') {
      document.querySelector(location.hash).scrollIntoView();
    }
  }

  const pages = { connect: connectPage, topup: topUpPage, wallet: walletPage };
  document.addEventListener('DOMContentLoaded', () => {
    if (!token) {
      setStatus('error', 'Open this page from the link the app gave you.');
      return;
    }
    const run = pages[document.body.dataset.page];
    if (run) run().catch((e) => setStatus('error', e.message));
  });
})();
