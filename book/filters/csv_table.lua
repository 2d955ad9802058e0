-- csv_table.lua — replaces
--
--   ```{.csv-table src="lab:lab02-im2col" where="kind=stack,k=3" columns="k,batch,impl,ms"
--      headers="k,batch,implementation,time (ms)" caption="..."}
--   ```
--
-- by a table. src: "lab:NAME" (the CSV the book build made by running labs/NAME
-- --quick) or a path (repository root or book/, e.g. results/gpu/foo.csv).
-- where: comma-separated col=value / col!=value, all must hold. columns: which
-- columns, in which order (default: all). headers: their titles, with units.
-- decimals: optional "ms=3,gflops=1", digits after the point for those columns.
-- The caption gets the provenance line from the CSV's "# key: value" header.
-- An unknown column or an empty result stops the build, naming it.
local crbook = dofile(pandoc.path.join({ pandoc.path.directory(PANDOC_SCRIPT_FILE), 'crbook.lua' }))

local function is_number(s)
  s = crbook.trim(s or '')
  return s ~= '' and tonumber(s) ~= nil
end

function CodeBlock(el)
  if not el.classes:includes('csv-table') then return nil end
  local src = el.attributes.src
  local what = 'csv-table src="' .. tostring(src) .. '"'
  if not src or src == '' then crbook.fail('csv-table', 'a {.csv-table} block needs src="..."') end
  local t = crbook.load_csv(src, what)
  local rows = crbook.filter_rows(t, el.attributes.where, what)

  local cols = crbook.split_list(el.attributes.columns)
  if #cols == 0 then cols = t.header end
  local idx = {}
  for k, c in ipairs(cols) do idx[k] = crbook.column(t, c, what) end

  local heads = cols
  if el.attributes.headers and el.attributes.headers ~= '' then
    heads = crbook.split_list(el.attributes.headers)
    if #heads ~= #cols then
      crbook.fail(what, #heads .. ' headers for ' .. #cols .. ' columns (headers="' ..
                  el.attributes.headers .. '")')
    end
  end

  local decimals = {}
  for _, d in ipairs(crbook.split_list(el.attributes.decimals)) do
    local c, n = d:match('^(.-)%s*=%s*(%d+)$')
    if not c then crbook.fail(what, 'bad decimals item "' .. d .. '" (expected col=N)') end
    crbook.column(t, c, what)
    decimals[c] = tonumber(n)
  end

  if #rows == 0 then
    crbook.fail(what, 'empty table: no row of ' .. t.path .. ' matches where="' ..
                tostring(el.attributes.where or '') .. '"')
  end

  local aligns, widths, header_cells, body = {}, {}, {}, {}
  for k, c in ipairs(cols) do
    local numeric = true
    for _, r in ipairs(rows) do
      if not is_number(r[idx[k]]) then numeric = false break end
    end
    aligns[k] = numeric and pandoc.AlignRight or pandoc.AlignLeft
    widths[k] = 0
    header_cells[k] = { pandoc.Plain(pandoc.read(heads[k], 'markdown').blocks[1]
                                     and pandoc.read(heads[k], 'markdown').blocks[1].content
                                     or { pandoc.Str(heads[k]) }) }
  end
  for _, r in ipairs(rows) do
    local cells = {}
    for k, c in ipairs(cols) do
      local v = crbook.trim(r[idx[k]] or '')
      if decimals[c] and is_number(v) then
        v = string.format('%.' .. decimals[c] .. 'f', tonumber(v))
      end
      cells[k] = { pandoc.Plain({ pandoc.Str(v) }) }
    end
    body[#body + 1] = cells
  end

  -- The caption sits under the table, outside its scroll box (a wide table scrolls
  -- sideways on a phone; its caption stays in the text column).
  local caption = crbook.caption(el.attributes.caption, t)
  local tbl = pandoc.utils.from_simple_table(
    pandoc.SimpleTable({}, aligns, widths, header_cells, body))
  local attrs = { ['data-csv'] = src, ['data-rows'] = tostring(#rows) }
  return pandoc.Div({
      pandoc.Div({ tbl }, pandoc.Attr('', { 'table-scroll' })),
      pandoc.Div({ pandoc.Plain(caption) }, pandoc.Attr('', { 'table-caption' })),
    }, pandoc.Attr(el.identifier or '', { 'csv-table' }, attrs))
end
