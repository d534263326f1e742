// Small DOM helpers shared by the screens.

import { ApiError } from './session.js'

const main = document.getElementById('main')

/** Builds an element: h('button', {class: 'x', onclick}, 'text', child). */
export function h (tag, props = {}, ...children) {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value)
    else if (key === 'class') el.className = value
    else el.setAttribute(key, value === true ? '' : value)
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) {
      el.append(child instanceof Node ? child : String(child))
    }
  }
  return el
}

export function show (...nodes) {
  main.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined && n !== false))
}

export function errorText (e) {
  return e instanceof ApiError ? e.message : 'Something went wrong. Try again.'
}

/** A form whose submit runs `action(values)` and shows its error. */
export function form (label, fields, submit, action) {
  const error = h('p', { class: 'error', role: 'alert' })
  const inputs = fields.map(([name, text, type = 'text', extra = {}]) => {
    const id = `f-${label.replace(/\W+/g, '-')}-${name}`.toLowerCase()
    return [name, h('label', { for: id }, text), h('input', { id, name, type, ...extra })]
  })
  const el = h('form', { 'aria-label': label },
    inputs.map(([, l, i]) => h('div', { class: 'field' }, l, i)),
    h('button', { type: 'submit' }, submit),
    error)
  el.addEventListener('submit', async (event) => {
    event.preventDefault()
    error.textContent = ''
    const values = Object.fromEntries(inputs.map(([name, , input]) => [name, input.value.trim()]))
    try {
      await action(values, el)
    } catch (e) {
      error.textContent = errorText(e)
    }
  })
  return el
}
