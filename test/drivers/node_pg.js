// test/drivers/node_pg.js: what docs/drivers.md says about node-postgres.
// Connects with the PG* environment variables to a database with oms
// installed; prints one "ok - ..." / "not ok - ..." line per claim.
// Run by test/suites/doc_examples.sh (npm install --prefix test/drivers first).
'use strict';
const { Client } = require('pg');

let failed = 0;
function check(name, cond, extra) {
  console.log(`${cond ? 'ok' : 'not ok'} - node-postgres: ${name}`);
  if (!cond) { failed++; if (extra !== undefined) console.log(`# ${extra}`); }
}

async function main() {
  const client = new Client();
  await client.connect();
  const items = [{ sku: 'NODE-1', quantity: 2, unit_price: 1999 }];
  await client.query("SELECT oms_set_stock('NODE-1', 10)");

  // A JavaScript array goes out as a PostgreSQL array literal: 22P02.
  let code = null;
  try {
    await client.query('SELECT oms_create_order($1, $2, $3)', ['cust-1', items, 'EUR']);
  } catch (err) { code = err.code; }
  check('an array passed as is fails with 22P02', code === '22P02', `got ${code}`);

  // JSON.stringify works; jsonb comes back parsed; the id is a string.
  const { rows } = await client.query('SELECT oms_create_order($1, $2, $3) AS o',
    ['cust-1', JSON.stringify(items), 'EUR']);
  const order = rows[0].o;
  check('JSON.stringify(items) creates the order', order.status === 'pending', JSON.stringify(order));

  // A string id needs no cast (the parameter's type is left to the server).
  const got = await client.query('SELECT oms_get_order($1) ->> \'status\' AS s', [order.order_id]);
  check('a string order id needs no ::uuid', got.rows[0].s === 'pending');

  // An object (metadata) is stringified by node-postgres itself.
  const m = await client.query('SELECT oms_create_order($1, $2, $3, metadata => $4) AS o',
    ['cust-2', JSON.stringify(items), 'EUR', { channel: 'web' }]);
  check('an object parameter is sent as JSON', m.rows[0].o.metadata && m.rows[0].o.metadata.channel === 'web',
    JSON.stringify(m.rows[0].o));

  // Errors carry the SQLSTATE in err.code.
  await client.query('SELECT oms_pay_order($1, $2)', [order.order_id, 'test_ok']);
  code = null;
  try {
    await client.query('SELECT oms_pay_order($1, $2)', [order.order_id, 'test_ok']);
  } catch (err) { code = err.code; }
  check('paying twice gives err.code 55000', code === '55000', `got ${code}`);
  code = null;
  try {
    await client.query('SELECT oms_get_order($1)', ['00000000-0000-0000-0000-000000000000']);
  } catch (err) { code = err.code; }
  check('an unknown order gives err.code P0002', code === 'P0002', `got ${code}`);

  await client.end();
}

main().then(() => process.exit(failed ? 1 : 0), (err) => {
  console.log(`not ok - node-postgres: unexpected error: ${err.stack || err}`);
  process.exit(1);
});
